#!/usr/bin/env python3
"""Validates envoy.yaml against Envoy's API schema (the xds-protos package).

Strict: unknown fields, wrong types and unknown enum values fail, including inside every
`typed_config` (google.protobuf.Any), whose `@type` must name a message Envoy knows.
Usage: python3 envoy/check_config.py [envoy/envoy.yaml ...]
"""
import importlib
import re
import pkgutil
import sys

import yaml
from google.protobuf import json_format


def register_all_envoy_types() -> None:
    """Imports every *_pb2 module of xds-protos so `Any` payloads can be resolved by name."""
    import envoy
    import udpa
    import xds

    for package in (envoy, xds, udpa):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            # The v2 API was removed from Envoy; only v3 (and unversioned) types are accepted.
            if module.name.endswith("_pb2") and not re.search(r"\.v2(alpha\d*|beta\d*)?\.", module.name):
                importlib.import_module(module.name)


def check(path: str) -> None:
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    bootstrap = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(document, bootstrap, ignore_unknown_fields=False)
    print(f"{path}: valid envoy.config.bootstrap.v3.Bootstrap")


def main() -> int:
    register_all_envoy_types()
    paths = sys.argv[1:] or ["envoy/envoy.yaml"]
    failed = False
    for path in paths:
        try:
            check(path)
        except (json_format.ParseError, yaml.YAMLError, OSError) as error:
            print(f"{path}: INVALID: {error}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
