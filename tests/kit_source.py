"""Source of the predictor package the tests ship, as a user would write it."""

KIT = '''
import os
import time

import joblib
import numpy as np


class Counting(object):
    """Loads model.joblib; records each from_path call in $KIT_LOG; returns NumPy arrays."""

    @classmethod
    def from_path(cls, model_dir):
        if os.environ.get("KIT_LOG"):
            with open(os.environ["KIT_LOG"], "a") as f:
                f.write("%d\\n" % os.getpid())
        time.sleep(float(os.environ.get("KIT_SLOW", "0")))
        self = cls()
        self.model = joblib.load(os.path.join(model_dir, "model.joblib"))
        return self

    def predict(self, instances, **kwargs):
        return self.model.predict(np.asarray(instances))


class Echo(object):
    """Answers each instance with itself and the request's other fields."""

    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        return [{"instance": i, "kwargs": kwargs} for i in instances]


class Batches(Echo):
    """Echoes, and lets concurrent requests share its calls: appends each call's instance count
    and keyword arguments to $KIT_BATCHES; takes $KIT_CALL_SECONDS per call, or the seconds
    of the keyword argument sleep; an instance "bad" fails the call it is in, and so does the
    keyword argument fail=true."""

    batchable = True

    def predict(self, instances, **kwargs):
        with open(os.environ["KIT_BATCHES"], "a") as f:
            f.write("%d %s\\n" % (len(instances), sorted(kwargs.items())))
        time.sleep(float(kwargs.get("sleep", os.environ.get("KIT_CALL_SECONDS", "0"))))
        if kwargs.get("fail") is True or "bad" in instances:
            raise ValueError("cannot predict %d instances" % len(instances))
        return Echo.predict(self, instances, **kwargs)


class Raising(Echo):
    def predict(self, instances, **kwargs):
        raise ValueError("instance 0 has the wrong shape")


class Unencodable(Echo):
    def predict(self, instances, **kwargs):
        return [object() for _ in instances]


class Pandas(Echo):
    def predict(self, instances, **kwargs):
        import pandas

        return pandas.DataFrame({"x": [float(i[0]) for i in instances], "nan": np.nan})


class Short(Echo):
    """Drops the last prediction."""

    def predict(self, instances, **kwargs):
        return np.zeros(len(instances) - 1)


class NotANumber(Echo):
    def predict(self, instances, **kwargs):
        return [float("nan"), float("inf"), -np.inf, np.float32("nan")][: len(instances)]


class Sleepy(Echo):
    """Sleeps as many seconds as the first instance says, then echoes."""

    def predict(self, instances, **kwargs):
        time.sleep(float(instances[0]))
        return instances


class OpensMissing(Echo):
    """Fails with an error that spells out where the package was unpacked."""

    def predict(self, instances, **kwargs):
        with open(os.path.join(os.path.dirname(__file__), "weights.bin")) as f:
            return f.read()


class Reprs(Echo):
    """Answers with repr() of each instance: shows what predict() really received."""

    def predict(self, instances, **kwargs):
        return [repr(i) for i in instances]


class ClassScores(Echo):
    """Answers {class index: score}, with int and NumPy int keys, as classifiers often do."""

    def predict(self, instances, **kwargs):
        return [{0: 0.25, np.int64(1): 0.75} for _ in instances]


class Exits(Echo):
    def predict(self, instances, **kwargs):
        import sys

        sys.exit(3)


class ExitsOnLoad(Echo):
    @classmethod
    def from_path(cls, model_dir):
        import argparse

        argparse.ArgumentParser().parse_args(["--job-dir"])


class NoPredict(object):
    @classmethod
    def from_path(cls, model_dir):
        return cls()


class BrokenLoad(Echo):
    @classmethod
    def from_path(cls, model_dir):
        raise IOError("artifact weights.bin is missing")


class CollectorState(Echo):
    """Answers whether the cyclic garbage collector ran during its from_path and runs now."""

    @classmethod
    def from_path(cls, model_dir):
        import gc

        self = cls()
        self.at_load = gc.isenabled()
        return self

    def predict(self, instances, **kwargs):
        import gc

        return [{"at_load": self.at_load, "serving": gc.isenabled()} for i in instances]
'''


def kit_files(top: str = "kit-0.1") -> dict[str, str]:
    """A 2019-style sdist: setup(scripts=['kit.py'])."""
    return _sdist("kit", KIT, top)


def _sdist(name: str, source: str, top: str) -> dict[str, str]:
    """A 2019-style sdist of one module: setup(scripts=['NAME.py'])."""
    return {
        f"{top}/setup.py": f"from setuptools import setup\nsetup(name={name!r}, version='0.1', "
        f"scripts=['{name}.py'])\n",
        f"{top}/PKG-INFO": f"Metadata-Version: 1.0\nName: {name}\nVersion: 0.1\n",
        f"{top}/{name}.py": source,
    }


HOG = '''
import os
import signal


class KilledOnLoad(object):
    """Is killed with SIGKILL in from_path, as the kernel's OOM killer kills a model too
    large for its instance."""

    @classmethod
    def from_path(cls, model_dir):
        os.kill(os.getpid(), signal.SIGKILL)

    def predict(self, instances, **kwargs):
        return instances
'''


def hog_files(top: str = "hog-0.1") -> dict[str, str]:
    """A package whose predictor is killed while loading, under a module name of its own."""
    return _sdist("hog", HOG, top)
