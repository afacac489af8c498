"""Install hivetrain: ``pip install -e . && python post_install.py``.

Ranges here say what the code is compatible with; requirements.txt pins the exact versions a
swarm should run (``make demo`` and ``make test`` install those).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'^__version__ = "([^"]+)"', Path("hivetrain/__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="hivetrain",
    version=VERSION,
    description="Bittensor subnet for decentralized training of a shared GPT-2 over hivemind",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hivetrain", "hivetrain.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        "torch>=2.13,<2.14",
        "hivemind>=1.1.12,<1.2",
        "bittensor>=11.3,<12",
        "transformers>=5.23,<6",
        "datasets>=5.2,<6",
        "tokenizers>=0.23,<0.24",
        "safetensors>=0.8,<0.9",
        "numpy>=2.4,<3",
        "bitsandbytes>=0.50,<0.51",
        "wandb>=0.31,<0.32",
        "uvloop>=0.23,<0.24",
        "fastapi>=0.163,<0.164",
        "uvicorn>=0.54,<0.55",
        "httpx>=0.28,<0.29",
        "pydantic>=2.14,<3",
        "matplotlib>=3.11,<4",
    ],
    extras_require={"dev": ["pytest>=9.2,<10", "pytest-timeout>=2.4,<3",
                    "pytest-xdist>=3.8,<4"]},
    entry_points={"console_scripts": ["hivetrain = hivetrain.cli:main"]},
)
