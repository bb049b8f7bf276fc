"""Plain ``nn.Module`` architectures; ``simplexify`` turns any of them into a simplex model.

``create(name, **kwargs)`` builds one by name and records the name and arguments on the
model (``simplexkern_architecture``), so a checkpoint can rebuild it. Names starting with
``torchvision.`` build ``torchvision.models.<name>(weights=None, **kwargs)``.
"""
from simplexkern.models.preresnet import PreResNet
from simplexkern.models.small import MLP, ConvNet1d, DigitsConvNet, LeNet5
from simplexkern.models.vgg import VGG16
from simplexkern.models.wide_resnet import WideResNet

_REGISTRY = {
    "vgg16": lambda **kw: VGG16(batch_norm=False, **kw),
    "vgg16_bn": lambda **kw: VGG16(batch_norm=True, **kw),
    "preresnet110": lambda **kw: PreResNet(depth=110, **kw),
    "preresnet164": lambda **kw: PreResNet(depth=164, **kw),
    "wrn28_10": lambda **kw: WideResNet(depth=28, widen_factor=10, **kw),
    "lenet5": LeNet5,
    "mlp": MLP,
    "digits_convnet": DigitsConvNet,
    "convnet1d": ConvNet1d,
}


def names():
    """The architecture names ``create`` knows (besides ``torchvision.*``)."""
    return sorted(_REGISTRY)


def create(name, **kwargs):
    """A fresh plain model of architecture ``name`` with constructor arguments ``kwargs``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name.startswith("torchvision."):
        import torchvision

        model = torchvision.models.get_model(name[len("torchvision."):], weights=None, **kwargs)
    elif name in _REGISTRY:
        model = _REGISTRY[name](**kwargs)
    else:
        raise ValueError(f"unknown architecture {name!r}; known: {names()} or 'torchvision.<name>'")
    model.simplexkern_architecture = {"name": name, "kwargs": dict(kwargs)}
    return model


__all__ = ["create", "names", "VGG16", "PreResNet", "WideResNet", "LeNet5", "MLP", "DigitsConvNet", "ConvNet1d"]
