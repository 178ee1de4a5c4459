"""proxy_end2: Proxy-Dirichlet ensemble distribution distillation as a fairseq plugin."""
from setuptools import find_packages, setup

setup(
    name="proxy_end2",
    version="0.1.0",
    description=(
        "Distil an ensemble of fairseq sequence models into one Prior Network with the "
        "Proxy-Dirichlet objective (Ryabinin, Malinin & Gales, NeurIPS 2021), with token- "
        "and sequence-level uncertainty"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(exclude=("tests", "tests.*", "examples", "examples.*")),
    install_requires=[
        # fairseq 0.12.2 from PyPI does not import on Python 3.11; fairseq-fixed installs the same
        # `fairseq` module and works with torch 2.13 and numpy 2 (see docs/environment.md).
        "fairseq-fixed==0.12.3.1",
        "torch>=2.6,<2.15",
        "numpy>=2,<3",
        "scipy",
        "scikit-learn",
        "sacrebleu>=2.0",
        "sentencepiece",
        "matplotlib",
        "editdistance",
        "rapidfuzz",  # token-level error detection: alignment of hypothesis and reference tokens
        "soundfile",  # speech recipe: reads FLAC/WAV
        "kaldi-native-fbank",  # speech recipe: 80-dim log-mel filterbanks
        "sacremoses",  # Moses punctuation normalisation in examples/wmt17_en_de
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout"]},
    entry_points={"console_scripts": [
        "proxy-end2-evaluate = proxy_end2.evaluation.cli:main",
        "proxy-end2-teacher-cache = proxy_end2.teacher_cache.build:main",
    ]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
