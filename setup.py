"""The packages: ``src/agent_hf`` and, as ``agent_hf.scripts``, the checkout's ``scripts/`` (the console commands of
``agent_hf.commands`` run them, so that they also work from a wheel). Everything else is in ``pyproject.toml``."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages("src", include=["agent_hf*"]), "agent_hf.scripts"],
    package_dir={"": "src", "agent_hf.scripts": "scripts"},
)
