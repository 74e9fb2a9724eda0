"""A user's own subclassed Keras model, in a module of its own (as in a user's project): the served
model ships this file and imports the class before loading the Keras file."""

import keras


class WindowRegressor(keras.Model):
    """No declared inputs: Keras builds it at its first batch of (rows, timesteps, features) windows."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.flatten, self.hidden, self.out = (keras.layers.Flatten(), keras.layers.Dense(units, activation="tanh"),
                                               keras.layers.Dense(1))

    def call(self, x):
        return self.out(self.hidden(self.flatten(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class TwoPartRegressor(keras.Model):
    """No declared inputs, called with a dict of two arrays."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.joined, self.out = keras.layers.Concatenate(), keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.joined([x["prices"], x["volumes"]]))
