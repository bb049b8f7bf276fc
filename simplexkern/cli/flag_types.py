"""The types of the ``simplexkern`` command's flags: each parses a flag's text into its value
or raises ``argparse.ArgumentTypeError`` saying what the flag needs."""

import argparse
import math


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def at_least(minimum):
    def parse(text):
        value = positive(text) if minimum >= 1 else int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def between(low, high):
    def parse(text):
        value = at_least(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


def number(low, high=None, *, strict=True):
    """A finite float in (low, high) (or [low, ...) when not ``strict``)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not (value > low if strict else value >= low) or (high is not None and not value < high):
            bounds = f"{'>' if strict else '>='} {low}" + (f" and < {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def regs(text):
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not value >= 0 or value == float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"λ values must be finite and >= 0, got {text}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"λ values must differ, got {text}")
    return values


def seeds(text):
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(value < 0 for value in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be different integers >= 0, got {text}")
    return values


def three_indices(text):
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {len(values)}: {text}")
    return values


def device(text):
    from simplexkern.train.runs import device_of

    if text == "auto":
        return text
    try:
        return str(device_of(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
