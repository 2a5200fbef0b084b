"""Packaging metadata and dependencies are in setup.cfg. This file only adds what setup.cfg cannot express next to
``packages = find:``: the repository's top-level calib_data/ folder installed inside the package as
edge_quamba/calib_data (edge_quamba.resources.calib_data_dir finds it there, or at the top level of a checkout)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["edge_quamba", "edge_quamba.*"]) + ["edge_quamba.calib_data"],
    package_dir={"edge_quamba.calib_data": "calib_data"},
)
