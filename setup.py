"""PLACE: pathological-level image-report pretraining for chest X-rays, Hugging Face native."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

# Start-up registration with transformers' Auto classes (modeling_place/_site/place_autoregister.py says why): a
# module and a .pth file at the top of site-packages. setuptools has no option that puts a .pth there.
SITE_FILES = ("place_autoregister.py", "place_autoregister.pth")


class BuildPyWithSiteFiles(build_py):
    """`build_py`, plus the start-up files at the wheel's top level (a wheel install; `pip install -e` skips them)."""

    def run(self) -> None:
        super().run()
        for name in SITE_FILES:
            self.copy_file(os.path.join("modeling_place", "_site", name), os.path.join(self.build_lib, name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, name) for name in SITE_FILES]


REQUIRES = [
    "torch>=2.4,<=2.14.1",
    "torchvision",
    "timm>=1.0",
    # configuration_place needs `SubConfigSpec`, which transformers 5.17 lacks (seen on the GPU machine); 5.24 is
    # the version every test and result here ran with.
    "transformers>=5.24,<6",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "numpy",
    "pillow",
]
EXTRAS = {
    "train": ["accelerate>=1.0", "datasets>=3", "evaluate", "pyyaml", "tqdm", "scikit-learn"],
    "dicom": ["pydicom"],
    "eval": ["scikit-learn", "pycocotools", "rouge-score", "sacrebleu", "pycocoevalcap", "evaluate"],
    "trackers": ["tensorboard"],
    "faiss": ["faiss-cpu"],
    "docs": ["matplotlib"],  # examples/ablation_report.py's plots
}
# the metric modules' libraries (metrics/<name>/requirements.txt): the cider and rouge_l modules call pycocoevalcap
TEST_TOOLS = ["pytest", "pytest-timeout", "hypothesis", "wheel", "peft"]  # wheel: test_packaging builds one; peft: LoRA on heads
EXTRAS["test"] = sorted(set(EXTRAS["train"] + EXTRAS["dicom"] + EXTRAS["eval"] + EXTRAS["docs"] + TEST_TOOLS))
EXTRAS["dev"] = sorted(set(EXTRAS["test"] + EXTRAS["trackers"] + ["ruff"]))

setup(
    name="place-cxr",
    version="0.1.0",
    description="PLACE: pathological-level cross-modal alignment and correlation exploration for chest X-rays",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # One import namespace: the repository's processing/ and model_cards/ folders install as subpackages of
    # modeling_place (package_dir), so site-packages gains no generic top-level name.
    packages=[
        "modeling_place", "modeling_place.processing", "modeling_place.data", "modeling_place.training",
        "modeling_place.evaluation", "modeling_place.evaluation.protocols", "modeling_place.publishing",
        "modeling_place.model_cards",
    ],
    package_dir={"modeling_place.processing": "processing", "modeling_place.model_cards": "model_cards"},
    package_data={
        "modeling_place.evaluation": ["metrics/*/*.py", "metrics/*/requirements.txt"],
        "modeling_place.model_cards": ["*.md"],
    },
    cmdclass={"build_py": BuildPyWithSiteFiles},
    install_requires=REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "place-synth=modeling_place.data.synthetic_cxr:main",
            "place-prepare=modeling_place.data.prepare:main",
        ]
    },
)
