import numpy as np


class ZeroCenterer(object):
    """Remembers the column means of the training data and subtracts them."""

    def __init__(self):
        self._means = None

    def preprocess(self, data):
        """Centers each column of `data` on the means seen at training time.

        The first call (during training) records the means; later calls reuse them.
        """
        if self._means is None:  # during training only
            self._means = np.mean(data, axis=0)
        return data - self._means
