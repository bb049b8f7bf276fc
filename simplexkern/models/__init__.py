"""Plain ``nn.Module`` architectures; ``simplexify`` turns any of them into a simplex model.

``create(name, **kwargs)`` builds one by name and records the name and arguments on the
model (``simplexkern_architecture``), so a checkpoint can rebuild it. Names starting with
``torchvision.`` build ``torchvision.models.<name>(weights=None, **kwargs)``.
"""

import math
from typing import Any

import torch
from torch import nn

from simplexkern import _checks
from simplexkern.data.dataset import Dataset
from simplexkern.models.preresnet import PreResNet
from simplexkern.models.small import MLP, ConvNet, ConvNet1d, DigitsConvNet, LeNet5
from simplexkern.models.transformer import Transformer
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
    "convnet2d": ConvNet,
    "convnet1d": ConvNet1d,
    "transformer": Transformer,
}
MAX_TOKENS = 64  # a signal is cut into patches so that at most this many tokens remain


def names() -> list[str]:
    """The architecture names ``create`` knows (besides ``torchvision.*``)."""
    return sorted(_REGISTRY)


def check_name(name: str, sized: bool = False) -> str:
    """``name`` when ``create`` knows it (``sized``: when ``for_data`` does, which also takes
    "convnet"); ValueError naming what is known otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name.startswith("torchvision."):
        import torchvision

        arch = name[len("torchvision.") :]
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(
                f"unknown architecture {name!r}: torchvision has no classification model {arch!r} "
                "(e.g. torchvision.resnet18)"
            )
    elif name not in _REGISTRY and not (sized and name == "convnet"):
        known = names() + (["convnet"] if sized else [])
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(known))} or 'torchvision.<name>'")
    return name


def create(name: str, **kwargs: Any) -> nn.Module:
    """A fresh plain model of architecture ``name`` with constructor arguments ``kwargs``."""
    check_name(name)
    if name.startswith("torchvision."):
        import torchvision

        model = torchvision.models.get_model(name[len("torchvision.") :], weights=None, **kwargs)
    else:
        model = _REGISTRY[name](**kwargs)
    model.simplexkern_architecture = {"name": name, "kwargs": dict(kwargs)}
    return model


def _sizes(name, shape, n_outputs, vocab_size):
    """(registry name, constructor arguments) of architecture ``name`` sized for inputs of
    ``shape`` (one sample) and ``n_outputs`` outputs; ``vocab_size``: the number of token ids
    when the inputs are token ids (else None)."""
    if name == "mlp":
        return name, {"in_features": math.prod(shape), "out_features": n_outputs}
    if name == "transformer":
        return name, _transformer_sizes(shape, n_outputs, vocab_size)
    if len(shape) == 2 and name in ("convnet", "convnet1d"):
        return "convnet1d", {"num_classes": n_outputs, "in_channels": shape[0], "length": shape[1]}
    if len(shape) != 3:
        raise ValueError(
            f"{name} takes images (C, H, W); the data's inputs have shape {shape} "
            f"(use 'mlp'{', or convnet for (C, L) signals' if len(shape) < 3 else ''})"
        )
    return _image_sizes(name, shape, n_outputs)


def _image_sizes(name, shape, n_outputs):
    """(registry name, constructor arguments) of an architecture for (C, H, W) images."""
    c, h, w = shape
    if name in ("convnet", "convnet2d"):
        return "convnet2d", {"num_classes": n_outputs, "in_channels": c}
    if name == "lenet5":
        if h != w:
            raise ValueError(f"lenet5 takes square images, the data's are {h}x{w}")
        return name, {"num_classes": n_outputs, "in_channels": c, "image_size": h}
    if name == "digits_convnet":
        if shape != (1, 8, 8) or n_outputs != 10:
            raise ValueError(f"digits_convnet takes 1x8x8 images and 10 classes; use 'convnet' for {shape}")
        return name, {}
    if name in ("vgg16", "vgg16_bn") and (h, w) != (32, 32):
        raise ValueError(f"{name} takes 32x32 images, the data's are {h}x{w}; use 'convnet' or a ResNet")
    if name.startswith("torchvision."):
        return name, _torchvision_sizes(name, shape, n_outputs)
    if name in _REGISTRY:
        return name, {"num_classes": n_outputs, "in_channels": c}
    raise ValueError(f"unknown architecture {name!r}; known: {names() + ['convnet']} or 'torchvision.<name>'")


def _transformer_sizes(shape, n_outputs, vocab_size):
    if len(shape) == 2:
        patch = next(p for p in range(1, shape[1] + 1) if shape[1] % p == 0 and shape[1] // p <= MAX_TOKENS)
        return {"num_classes": n_outputs, "in_channels": shape[0], "length": shape[1], "patch": patch}
    if len(shape) == 1 and vocab_size is not None:
        return {"num_classes": n_outputs, "vocab_size": vocab_size, "length": shape[0]}
    raise ValueError(
        f"transformer takes (C, L) signals or (L,) token ids (an .npz of integers >= 0); the "
        f"data's inputs have shape {shape}"
    )


def _torchvision_sizes(name, shape, n_outputs):
    c, h, w = shape
    if c != 3:
        raise ValueError(f"{name} takes 3-channel images, the data's have {c}")
    arch, kwargs = name[len("torchvision.") :], {"num_classes": n_outputs}
    if arch.startswith("vit_"):  # position embeddings sized for the images
        if h != w:
            raise ValueError(f"{name} takes square images, the data's are {h}x{w}")
        kwargs["image_size"] = h
    elif arch.startswith("maxvit"):
        kwargs["input_size"] = (h, w)
    elif arch in ("googlenet", "inception_v3"):  # one output, not the auxiliary heads' tuple
        kwargs.update(aux_logits=False, init_weights=True)
    return kwargs


def for_data(name: str, data: Dataset, **kwargs: Any) -> nn.Module:
    """A fresh model of architecture ``name`` sized for ``data`` (a ``simplexkern.data.Dataset``):
    input shape and number of outputs are inferred. ``mlp`` takes any input; ``convnet`` is
    a 1-D ConvNet for (C, L) signals and a 2-D one for (C, H, W) images; ``transformer``
    takes (C, L) signals (cut into at most 64 tokens) and (L,) token ids; the CIFAR and
    ``torchvision.*`` architectures take images (ViT and MaxViT sized for them). ``kwargs``
    override or add constructor arguments. The model is run once on the data's input size,
    so one that cannot take it fails here (ValueError) and not in the middle of training."""
    check_name(name, sized=True)
    shape, n_outputs = tuple(data.input_shape), data.n_outputs
    registry_name, sized = _sizes(name, shape, n_outputs, data.vocab_size)
    try:  # built and run once on the data's input size: what does not fit fails here, with its reason
        model = create(registry_name, **{**sized, **kwargs})
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
    except (ValueError, RuntimeError, AssertionError, IndexError, TypeError, OverflowError) as err:
        raise ValueError(f"{name} cannot take the data's inputs of shape {shape}: {_checks.reason(err)}") from None
    return model.train()


__all__ = [
    "create",
    "check_name",
    "for_data",
    "names",
    "VGG16",
    "PreResNet",
    "WideResNet",
    "LeNet5",
    "MLP",
    "ConvNet",
    "DigitsConvNet",
    "ConvNet1d",
    "Transformer",
]
