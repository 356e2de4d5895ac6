"""The release, in a leaf module: the modules that send or write it (the User-Agent, the
custom runners' files) then need not import the package root, which imports the API."""

__version__ = "0.1.0"
