"""Install mrcnn_tf: `pip install -e ".[dev]"` for development, `pip install .` for use."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mrcnn_tf" / "__init__.py").read_text()).group(1)
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="mrcnn-tf",
    version=VERSION,
    description="Mask R-CNN on Keras 3 / TensorFlow 2.21 with Matterport's API, for white blood cells (LISC)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["mrcnn_tf", "mrcnn_tf.*"]),
    # The demo's real smears (BCCD-WBC, MIT, with its LICENSE) travel with the package.
    package_data={"mrcnn_tf.wbc": ["data/bccd_wbc/*.md", "data/bccd_wbc/LICENSE", "data/bccd_wbc/annotations/*.json",
                                   "data/bccd_wbc/images/*.jpg"]},
    install_requires=REQUIREMENTS,
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "nbmake>=1.5", "ipykernel>=6"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # bench/compare_torchvision.py only: torchvision's Mask R-CNN timed beside mrcnn_tf in the same run.
        "compare": ["torch>=2.4", "torchvision>=0.19"],
    },
    entry_points={"console_scripts": ["mrcnn-tf=mrcnn_tf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
