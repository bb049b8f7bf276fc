"""What the layers of one SimplexModel share during a forward: the S points being evaluated.

Inside a simplex model the activations of all points travel merged on the batch dimension,
``(S * B, ...)``, so the model's own forward code (flatten, pooling, residual adds, views)
runs unchanged; each simplex layer splits the leading dimension into ``(S, B)`` itself.
"""


class Points:
    def __init__(self):
        self.clear()

    def clear(self):
        self.active = False
        self.n = 0  # S
        self.coeffs = None  # (S, k) in store row order
        self.weights = None  # slot name -> (k, *shape), row order
        self.trainable = []  # store rows that receive gradients
        self.shared_merged = None  # the (S * B, ...) input the model made from a shared input
        self.shared_input = None  # ... and that (B, ...) input itself
        self.stats_rows = None  # BatchNorm: tracked statistics row of each point, or None
        self.stats_valid = None  # in training and under torch.compile: a tensor, whether stats_rows is valid
        self.backend = None

    def require(self, layer):
        if not self.active:
            raise RuntimeError(f"{type(layer).__name__} runs inside a SimplexModel's forward, which supplies the "
                               "points to evaluate; call the SimplexModel, not its inner module")

    def split(self, x, name="x"):
        """(S * B, ...) -> (S, B, ...), or the shared (B, ...) input when x is it."""
        if x is self.shared_merged:
            return self.shared_input, True
        if x.shape[0] % self.n:
            raise ValueError(f"{name}: a simplex layer expects its input's first dimension to be points x batch "
                             f"(a multiple of S={self.n}), got shape {tuple(x.shape)}")
        return x.reshape(self.n, x.shape[0] // self.n, *x.shape[1:]), False
