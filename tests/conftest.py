pytest_plugins = ["tests.support.moto"]
