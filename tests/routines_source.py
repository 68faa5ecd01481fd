"""Source of the custom prediction routines that tests/test_routines.py packages and serves.

Each is written the way routines deployed on AI Platform were: modules shipped flat with
`setup(scripts=[...])` or inside packages, pickles naming the routine's own classes, old
import spellings, results returned without `.tolist()`. The training scripts run in a
subprocess where the routine's modules are importable, so that pickles name them as the
routine's author's own training did.
"""

from __future__ import annotations

# 1. An iris classifier with a preprocessor of its own, shipped flat, as in the 2019 guide.

IRIS_PREPROCESS = """
import numpy as np


class RangeScaler(object):
    \"\"\"Maps each feature onto [0, 1] by the range it took in training.\"\"\"

    def fit(self, X):
        X = np.asarray(X, dtype=float)
        self._low = X.min(axis=0)
        self._span = X.max(axis=0) - self._low
        return self

    def transform(self, X):
        return (np.asarray(X, dtype=float) - self._low) / self._span
"""

IRIS_PREDICTOR = """
import os
import pickle

import numpy as np
from sklearn.externals import joblib


class IrisPredictor(object):
    def __init__(self, model, preprocessor):
        self._model = model
        self._preprocessor = preprocessor

    def predict(self, instances, **kwargs):
        inputs = self._preprocessor.transform(np.asarray(instances))
        if kwargs.get("probabilities"):
            return self._model.predict_proba(inputs).tolist()
        return [name for name in self._model.predict(inputs)]

    @classmethod
    def from_path(cls, model_dir):
        model = joblib.load(os.path.join(model_dir, "classifier.joblib"))
        with open(os.path.join(model_dir, "preprocessor.pkl"), "rb") as f:
            preprocessor = pickle.load(f)
        return cls(model, preprocessor)
"""

# argv: the routine's source folder, the model folder, the instances as JSON. Prints what
# the trained model answers for them, called directly.
IRIS_TRAIN = """
import json, pickle, sys
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
sys.path.insert(0, sys.argv[1])
from preprocess import RangeScaler

iris = load_iris()
names = iris.target_names[iris.target]
scaler = RangeScaler().fit(iris.data)
model = LogisticRegression(max_iter=1000).fit(scaler.transform(iris.data), names)
joblib.dump(model, sys.argv[2] + "/classifier.joblib")
with open(sys.argv[2] + "/preprocessor.pkl", "wb") as f:
    pickle.dump(scaler, f)
inputs = scaler.transform(json.loads(sys.argv[3]))
print(json.dumps({"names": model.predict(inputs).tolist(),
                  "probabilities": model.predict_proba(inputs).tolist()}))
"""

# 2. A Keras text classifier with a tokenizer of its own, pickled.

TEXT_PREPROCESSOR = """
import re

import numpy as np


class TextPreprocessor(object):
    \"\"\"Texts to rows of word indices of one length: 0 pads, 1 is a word not seen in fit.\"\"\"

    def __init__(self, max_length):
        self._max_length = max_length
        self._vocabulary = {}

    def _words(self, text):
        return re.findall(r"[a-z']+", text.lower())

    def fit(self, texts):
        counts = {}
        for text in texts:
            for word in self._words(text):
                counts[word] = counts.get(word, 0) + 1
        ranked = sorted(counts, key=lambda word: (-counts[word], word))
        self._vocabulary = dict((word, index + 2) for index, word in enumerate(ranked))
        return self

    def transform(self, texts):
        rows = np.zeros((len(texts), self._max_length), dtype=np.int32)
        for row, text in enumerate(texts):
            indices = [self._vocabulary.get(word, 1) for word in self._words(text)]
            indices = indices[: self._max_length]
            rows[row, : len(indices)] = indices
        return rows
"""

TEXT_PREDICTOR = """
import os
import pickle

import numpy as np
from tensorflow import keras

LABELS = ["complaint", "praise", "question"]


class TextClassifier(object):
    def __init__(self, model, processor):
        self._model = model
        self._processor = processor

    def predict(self, instances, **kwargs):
        rows = self._processor.transform(instances)
        scores = self._model.predict(rows)
        return [{"label": LABELS[int(np.argmax(s))], "score": float(np.max(s))} for s in scores]

    @classmethod
    def from_path(cls, model_dir):
        model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
        with open(os.path.join(model_dir, "processor.pkl"), "rb") as f:
            processor = pickle.load(f)
        return cls(model, processor)
"""

# 8. A TensorFlow 1.x routine moved onto tf.compat.v1: a Session over a SavedModel's graph.

GRAPH_PREDICTOR = """
import tensorflow as tf


class GraphPredictor(object):
    def __init__(self, session, inputs, outputs):
        self._session = session
        self._inputs = inputs
        self._outputs = outputs

    @classmethod
    def from_path(cls, model_dir):
        session = tf.compat.v1.Session(graph=tf.Graph())
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
        signature = meta_graph.signature_def["serving_default"]
        return cls(session, signature.inputs["features"].name, signature.outputs["scores"].name)

    def predict(self, instances, **kwargs):
        scores = self._session.run(self._outputs, feed_dict={self._inputs: instances})
        return scores.tolist()
"""

# argv: the text routine's source folder, its model folder, the texts as JSON, the graph
# model's folder, its weights and bias as JSON. One TensorFlow import makes both models.
# Prints the Keras model's scores for the texts, from the model saved and loaded back.
TENSORFLOW_TRAIN = """
import json, pickle, sys
import numpy as np
import tensorflow as tf
from tensorflow import keras
sys.path.insert(0, sys.argv[1])
from text_preprocessor import TextPreprocessor

keras.utils.set_random_seed(0)
texts = ["my order arrived broken", "the parcel is late again", "refund me now, awful",
         "great service, thank you", "lovely product, works well", "thanks, very happy",
         "where is my parcel", "how do I return it", "can I change my order"]
labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
processor = TextPreprocessor(max_length=6).fit(texts)
model = keras.Sequential([
    keras.Input(shape=(6,), dtype="int32"),
    keras.layers.Embedding(input_dim=64, output_dim=8),
    keras.layers.GlobalAveragePooling1D(),
    keras.layers.Dense(3, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
model.fit(processor.transform(texts), labels, epochs=5, verbose=0)
model.save(sys.argv[2] + "/model.keras")
with open(sys.argv[2] + "/processor.pkl", "wb") as f:
    pickle.dump(processor, f)
loaded = keras.models.load_model(sys.argv[2] + "/model.keras")
scores = loaded(processor.transform(json.loads(sys.argv[3])), training=False)

weights, bias = json.loads(sys.argv[5])
graph = tf.Graph()
with graph.as_default():
    features = tf.compat.v1.placeholder(tf.float32, [None, 3], name="features")
    w = tf.compat.v1.Variable(np.asarray(weights, np.float32), name="weights")
    b = tf.compat.v1.Variable(np.asarray(bias, np.float32), name="bias")
    output = tf.nn.softmax(tf.matmul(features, w) + b, name="scores")
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(sys.argv[4])
        signature = tf.compat.v1.saved_model.predict_signature_def(
            inputs={"features": features}, outputs={"scores": output})
        builder.add_meta_graph_and_variables(
            session, [tf.compat.v1.saved_model.tag_constants.SERVING],
            signature_def_map={"serving_default": signature})
        builder.save()
print(json.dumps(np.asarray(scores).tolist()))
"""

# 3. An XGBoost Booster with its metadata in assets/, instances keyed by feature name.

BOOSTER_PREDICTOR = """
import json
import os

import numpy as np
import xgboost as xgb


class BoosterPredictor(object):
    def __init__(self, booster, metadata):
        self._booster = booster
        self._features = metadata["feature_names"]
        self._labels = metadata["labels"]

    @classmethod
    def from_path(cls, model_dir):
        booster = xgb.Booster()
        booster.load_model(os.path.join(model_dir, "model.bst"))
        with open(os.path.join(model_dir, "assets", "model_metadata.json")) as f:
            metadata = json.load(f)
        return cls(booster, metadata)

    def predict(self, instances, **kwargs):
        del kwargs  # nothing but the instances is used
        rows = np.array([[float(row[name]) for name in self._features] for row in instances])
        probabilities = self._booster.predict(xgb.DMatrix(rows, feature_names=self._features))
        return [
            {"predicted_label": self._labels[int(np.argmax(p))], "probabilities": p}
            for p in probabilities
        ]
"""

# 4 and 9. A regressor over a DataFrame, from a fork whose predict takes no **kwargs.

PRICE_PREDICTOR = """
import os

import joblib
import pandas as pd

COLUMNS = ["rooms", "area", "age"]


class PricePredictor(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(joblib.load(os.path.join(model_dir, "model.joblib")))

    def predict(self, instances):
        frame = pd.DataFrame(instances, columns=COLUMNS)
        return self._model.predict(frame)
"""

# 5. Images: binary PGM files, sent as {"b64": ...} objects or as bare base64 strings.

BRIGHTNESS_PREDICTOR = """
import base64
import json
import os

import numpy as np


def read_pgm(data):
    \"\"\"The pixels of a binary PGM (P5) image of 8-bit samples, scaled to [0, 1].\"\"\"
    fields, position = [], 0
    while len(fields) < 4:
        while data[position:position + 1].isspace():
            position += 1
        end = position
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[position:end])
        position = end
    if fields[0] != b"P5":
        raise ValueError("not a binary PGM image")
    width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height, offset=position + 1)
    return pixels.reshape(height, width) / float(maxval)


class BrightnessClassifier(object):
    def __init__(self, threshold, labels):
        self._threshold = threshold
        self._labels = labels

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        return cls(config["threshold"], config["labels"])

    def predict(self, instances, **kwargs):
        size = int(kwargs.get("size", 4))
        results = []
        for instance in instances:
            if isinstance(instance, dict):
                data = instance["image_bytes"]
            else:
                data = base64.b64decode(instance)
            brightness = float(read_pgm(data)[:size, :size].mean())
            label = self._labels[int(brightness > self._threshold)]
            results.append({"label": label, "brightness": brightness})
        return results
"""

# 6. A tagger inside a package laid out with find_packages(), declaring a dependency.

TAGGER_SETUP = """
from setuptools import find_packages, setup

setup(
    name="tagger",
    version="0.3",
    packages=find_packages(),
    scripts=["routine/predictor.py"],
    install_requires=["six>=1.10"],
)
"""

TAGGER_FEATURES = """
import six


def token_features(token):
    token = six.text_type(token)
    return {
        "lower": token.lower(),
        "suffix2": token[-2:].lower(),
        "suffix3": token[-3:].lower(),
        "capitalized": token[:1].isupper(),
        "digit": token.isdigit(),
    }
"""

TAGGER_PREDICTOR = """
import os

import joblib

from routine.features import token_features


class Tagger(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(joblib.load(os.path.join(model_dir, "model.joblib")))

    def predict(self, instances, **kwargs):
        tagged = []
        for sentence in instances:
            tokens = sentence.split()
            if not tokens:
                tagged.append([])
                continue
            tagged.append(list(self._model.predict([token_features(t) for t in tokens])))
        return tagged
"""

# 7. A random forest pickled with plain pickle, in a `deploy` package: four genres a row.

RANKER_PREDICTOR = """
import os
import pickle

import numpy as np


class Predictor(object):
    def __init__(self, model):
        self._model = model

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "model.pkl"), "rb") as f:
            return cls(pickle.load(f))

    def predict(self, instances, **kwargs):
        probabilities = self._model.predict_proba(np.array(instances))
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :4]
        return [[str(self._model.classes_[i]) for i in row] for row in ranked]
"""

# 10. One number for the whole call, unless asked for the means of chunks.

MEAN_PREDICTOR = """
import json
import os

import numpy as np


class MeanReading(object):
    def __init__(self, scale, offset):
        self._scale = scale
        self._offset = offset

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "calibration.json")) as f:
            calibration = json.load(f)
        return cls(calibration["scale"], calibration["offset"])

    def predict(self, instances, **kwargs):
        readings = np.asarray(instances, dtype=np.float32) * self._scale + self._offset
        chunks = kwargs.get("chunks")
        if chunks:
            return [part.mean() for part in np.array_split(readings, chunks)]
        return readings.mean()
"""
