"""Generated gRPC stubs of protos/ (package juki.v1): run protos/generate.py."""
