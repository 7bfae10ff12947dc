"""Probabilistic attention (§3 of the paper): the math every backend shares, and the one dispatch.

Every position carries a log existence probability ``log p`` (0 = certain, −inf = hard padding).
The raw score of query q and key k is shifted by ``log p_k − log p_q`` when k > q and left alone
otherwise: a key that probably does not exist (given that the query does) counts for little. With
all-zero log existence this is plain softmax attention; with a sharp 1 → 0 drop it equals a hard
key mask.

Hard padding (−inf) is handled explicitly rather than through ``−inf − (−inf)``:
 * a padded key gets −inf for every real query (it never contributes),
 * a padded query attends with no bias (so its softmax stays finite) and its output is set to 0.

The backends are components of kind ``attention`` (``zonkey/components/attention/``, one file
each, plus any a plugin registers). :func:`probabilistic_attention` finds a backend by its
registry name, checks the inputs and the backend's declared :class:`BackendConstraints`, and calls
the backend module built from the config's defaults; the backend modules a model builds from its
recipe run the same checks. Nothing changes semantics behind the caller's back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from zonkey.core.contracts.registry import ComponentConfig, UnknownComponentError, registry
from zonkey.errors import ZonkeyError

# The backends zonkey ships (registered by ``zonkey.components.attention``); plugins may add more.
BACKENDS: tuple[str, ...] = ("reference", "sdpa", "flex", "hard", "auto")
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class AttentionBackendError(ZonkeyError, RuntimeError):
    """A backend cannot run here (missing feature, unsupported dtype or device)."""


@dataclass(frozen=True)
class BackendConstraints:
    """What an attention backend can run on, declared on its config class (``constraints``).

    Attributes:
        supports_cpu_backward: gradients to q, k, v can be taken on CPU.
        dtypes: the dtypes of q, k, v the backend accepts.
        needs_cuda: the backend runs on CUDA tensors only.
        alternatives: backends to name in the error when a constraint fails.
    """

    supports_cpu_backward: bool = True
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    needs_cuda: bool = False
    alternatives: tuple[str, ...] = ("sdpa", "reference")

    def violation(self, q: Tensor, k: Tensor, v: Tensor) -> str | None:
        """Why the backend cannot run on these inputs.

        Args:
            q: (b, h, n, dh) queries.
            k: (b, h, n, dh) keys.
            v: (b, h, n, dh) values.

        Returns:
            The reason, or None when the backend can run.
        """
        if self.needs_cuda and not q.is_cuda:
            return f"needs CUDA tensors; got {q.device.type}"
        if q.dtype not in self.dtypes:
            return f"does not support dtype {q.dtype} (supports {', '.join(str(d) for d in self.dtypes)})"
        if (not self.supports_cpu_backward and not q.is_cuda and torch.is_grad_enabled()
                and (q.requires_grad or k.requires_grad or v.requires_grad)):
            return "has no backward pass on CPU, and q, k, v require grad"
        return None


def check_constraints(name: str, constraints: BackendConstraints, q: Tensor, k: Tensor, v: Tensor) -> None:
    """Refuse inputs the backend ``name`` cannot run on, naming the alternatives that can.

    Args:
        name: the backend's registry name.
        constraints: what it declares it runs on.
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.

    Raises:
        AttentionBackendError: one line: the backend, the reason, and those of its declared
            alternatives (registered, and accepting these inputs) to use instead.
    """
    reason = constraints.violation(q, k, v)
    if reason is None:
        return
    reg = registry("attention")
    usable = [a for a in constraints.alternatives
              if a != name and a in reg and constraints_of(reg.get(a)).violation(q, k, v) is None]
    hint = f"use backend {' or '.join(repr(a) for a in usable)}" if usable else "no other backend accepts these inputs"
    raise AttentionBackendError(f"attention backend {name!r} {reason}; {hint}")


def split_existence(log_existence: Tensor) -> tuple[Tensor, Tensor]:
    """Separate hard padding from the finite log existence.

    Args:
        log_existence: (b, n), −inf on hard padding.

    Returns:
        (finite log existence with padding set to 0, bool padding mask), both (b, n).
    """
    pad = torch.isneginf(log_existence)
    safe = log_existence.masked_fill(pad, 0.0)
    return safe, pad


def existence_bias(log_existence: Tensor, *, causal: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    """The additive score bias of probabilistic attention.

    Args:
        log_existence: (b, n) log existence (−inf for hard padding).
        causal: also mask keys after the query.
        dtype: dtype of the result (default: that of ``log_existence``).

    Returns:
        (b, 1, n, n) bias[q, k]: ``log p_k − log p_q`` for k > q, 0 for k <= q, −inf for padded keys
        of real queries and, when causal, for every k > q; otherwise 0 on padded query rows.
    """
    safe, pad = split_existence(log_existence)
    n = log_existence.shape[-1]
    idx = torch.arange(n, device=log_existence.device)
    future = idx[None, :] > idx[:, None]  # (q, k)
    diff = safe[:, None, :] - safe[:, :, None]  # (b, q, k) = log p_k − log p_q
    bias = torch.where(future[None], diff, torch.zeros_like(diff))
    bias = bias.masked_fill(pad[:, :, None], 0.0)  # padded query rows: no bias
    key_masked = pad[:, None, :] & ~pad[:, :, None]  # real query, padded key
    if causal:
        key_masked = key_masked | future[None]
    bias = bias.masked_fill(key_masked, float("-inf"))
    bias = bias[:, None]  # (b, 1, q, k)
    return bias.to(dtype) if dtype is not None else bias


def check_inputs(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor) -> None:
    """Validate the shapes of a probabilistic self-attention call.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n).

    Every backend function calls this, so a backend function or module used directly fails as
    clearly as :func:`probabilistic_attention`.

    Raises:
        ValueError: q, k, v are not 4-D, q and k differ in shape (the bias pairs query and key
            positions of one sequence, so both see the same n and dh), v disagrees with k on
            (b, h, n), q, k, v differ in dtype, or log_existence is not (b, n).
    """
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be 4-D (b, h, n, dh); got {shapes}")
    if k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (b, h, n, dh); got {shapes}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must agree with k on (b, h, n); got {shapes}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if log_existence.shape != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"log_existence must be (b, n) = {(q.shape[0], q.shape[2])} for {shapes}; got {tuple(log_existence.shape)}"
        )


def zero_padded_queries(out: Tensor, log_existence: Tensor) -> Tensor:
    """Set the output rows of hard-padded queries to exactly 0.

    Args:
        out: (b, h, n, dh) attention output.
        log_existence: (b, n) log existence, −inf on hard padding.

    Returns:
        (b, h, n, dh).
    """
    pad = torch.isneginf(log_existence)[:, None, :, None]  # (b, 1, n, 1)
    return out.masked_fill(pad, 0.0)


def constraints_of(config_cls: type[ComponentConfig]) -> BackendConstraints:
    """The constraints an attention config class declares (none declared: no constraints)."""
    declared = getattr(config_cls, "constraints", None)
    return declared if isinstance(declared, BackendConstraints) else BackendConstraints()


# One module per config class, built from its defaults: a name re-registered by another class
# (a plugin, a test) gets a fresh module.
_default_modules: dict[type[ComponentConfig], nn.Module] = {}


def _default_module(name: str, config_cls: type[ComponentConfig]) -> nn.Module:
    module = _default_modules.get(config_cls)
    if module is None:
        try:
            module = registry("attention").config(name).build()
        except ValidationError as exc:
            raise AttentionBackendError(
                f"attention backend {name!r} cannot be built from its defaults ({exc.error_count()} field errors); "
                f"build it with registry('attention').config({name!r}, ...).build()"
            ) from None
        _default_modules[config_cls] = module
    return module


def probabilistic_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_existence: Tensor,
    *,
    causal: bool = False,
    backend: str = "reference",
) -> Tensor:
    """Attention with existence probabilities (§3), through the backend registered as ``backend``.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence of every position (0 = certain, −inf = hard padding).
        causal: mask keys after the query as well.
        backend: the registry name of an attention backend (built-in: ``reference``, ``sdpa``,
            ``flex``, ``hard``, ``auto``: flex on CUDA, sdpa elsewhere), run with its default options.

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.

    Raises:
        ValueError: shapes disagree or the backend is unknown.
        AttentionBackendError: the backend cannot run on these inputs.
    """
    check_inputs(q, k, v, log_existence)
    try:
        config_cls = registry("attention").get(backend)
    except UnknownComponentError:
        known = ", ".join(registry("attention").names())
        raise ValueError(f"unknown attention backend {backend!r}; known: {known}") from None
    check_constraints(backend, constraints_of(config_cls), q, k, v)
    return _default_module(backend, config_cls)(q, k, v, log_existence, causal=causal)
