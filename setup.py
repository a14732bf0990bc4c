"""Build and install RasPy.

The broker's hot path lives in Cython modules under ``raspy/mdp/_fast``. They are
compiled when Cython and a C compiler are available; otherwise the package
installs its pure-Python twin and says so, so a Pi without a toolchain still
gets a working (slower) RasPy.
"""
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent


def fast_extensions() -> list:
    """The Cython extensions, or none when Cython (or pyzmq's headers) is missing."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("RasPy: Cython not found, installing the pure-Python twin", file=sys.stderr)
        return []
    sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "raspy" / "mdp" / "_fast").glob("*.pyx"))
    include_dirs = []
    try:
        import zmq
        include_dirs = zmq.get_includes()
    except ImportError:
        pass
    try:
        return cythonize(
            sources,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
            include_path=include_dirs,
            quiet=True,
        )
    except Exception as exc:  # a .pyx this Cython cannot translate
        print(f"RasPy: Cython failed ({exc}), installing the pure-Python twin", file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """Compile what can be compiled; a failed extension falls back to the twin."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            print(f"RasPy: no C compiler ({exc}), installing the pure-Python twin", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"RasPy: could not compile {ext.name} ({exc}), using the twin", file=sys.stderr)


setup(
    name="raspy",
    version="0.1.0",
    description="Run a house from a Raspberry Pi: a ZeroMQ Majordomo broker, supervised services, sensors and a status page",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["raspy", "raspy.*"]),
    package_data={"raspy": ["*.toml", "web/templates/*", "web/static/*", "scenarios/*.py"]},
    ext_modules=fast_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=[
        "pyzmq>=25",
        "msgpack>=1.0",
        "regex>=2022.1",
        "APScheduler>=3.10,<4",
        "bottle>=0.12",
        "waitress>=3,<4",
        "gpiozero>=2,<3",
        "paho-mqtt>=2,<3",
    ],
    extras_require={
        # lgpio, gpiozero's pin factory on current Raspberry Pi OS and the Pi 5, builds against the
        # Pi's liblgpio: install it on the Pi (pip install "raspy[pi]") or take python3-lgpio from apt.
        "pi": ["lgpio>=0.2"],
        "dev": [
            "pytest>=7",
            "pytest-timeout",
            "pytest-benchmark",
            "hypothesis",
            "cython>=3",
            "coverage",
            "sphinx>=7",
            "myst-parser>=3",
        ],
    },
    entry_points={"console_scripts": ["raspy = raspy.cli:main"]},
)
