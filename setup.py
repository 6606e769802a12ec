"""Build configuration beyond pyproject.toml: the optional C accelerator only.

`imgbatch.imaging._jpegdct` (DCT-domain JPEG requantization, see imaging/turbo.py) is
built when a C compiler and libjpeg-turbo's headers are present (Debian:
libjpeg62-turbo-dev, installed by scripts/system-packages.sh). `optional=True`: where
it cannot be built, the install still succeeds and imgbatch uses its pixel route.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "imgbatch.imaging._jpegdct",
            ["src/imgbatch/imaging/_jpegdct.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
