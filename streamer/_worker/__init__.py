"""Worker jobs (seed 004): jobs that remote workers claim, download, process and upload."""
