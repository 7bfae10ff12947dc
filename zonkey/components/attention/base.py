"""The shape every attention backend shares.

A parameter-free module with the probabilistic-attention signature
(:class:`zonkey.core.contracts.protocols.Attention`), built from a recipe node such as ``attention: {name: sdpa}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from zonkey.core.contracts.registry import ComponentConfig
from zonkey.core.nn.attention import BackendConstraints, check_constraints, check_inputs
from zonkey.core.nn.local_attention import local_attention

BackendFn = Callable[..., Tensor]  # (q, k, v (b, h, n, dh), log_existence (b, n), *, causal, **options) -> (b, h, n, dh)


class AttentionBackend(nn.Module):
    """Parameter-free module running one backend function with fixed options.

    Args:
        name: the backend's registry name.
        fn: the backend function.
        constraints: what the backend can run on; checked on every call.
        local_fn: the sliding-window form of ``fn`` (default: :func:`zonkey.core.nn.local_attention.local_attention`,
            the probabilistic-attention scores over each query's band of keys); it gets the same options.
        options: keyword options passed to ``fn`` (e.g. ``threshold``).
    """

    def __init__(self, name: str, fn: BackendFn, constraints: BackendConstraints, local_fn: BackendFn | None = None,
                 **options: object) -> None:
        super().__init__()
        self.name = name
        self.constraints = constraints
        self._fn = fn
        self._local_fn = local_fn
        self._options = options

    def forward(self, q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
        """Attend with existence probabilities.

        Args:
            q: (b, h, n, dh) queries.
            k: (b, h, n, dh) keys.
            v: (b, h, n, dh) values.
            log_existence: (b, n) log existence (−inf: hard padding).
            causal: mask keys after the query as well.

        Returns:
            (b, h, n, dh).

        Raises:
            ValueError: shapes disagree.
            AttentionBackendError: the backend cannot run on these inputs.
        """
        check_inputs(q, k, v, log_existence)
        check_constraints(self.name, self.constraints, q, k, v)
        return self._fn(q, k, v, log_existence, causal=causal, **self._options)

    def local(self, q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, window: int,
              causal: bool = False) -> Tensor:
        """Attend only to keys within ``window`` positions of each query, in O(n · window).

        Args:
            q: (b, h, n, dh) queries.
            k: (b, h, n, dh) keys.
            v: (b, h, n, dh) values.
            log_existence: (b, n) log existence (−inf: hard padding).
            window: the largest query-key distance attended.
            causal: mask keys after the query as well.

        Returns:
            (b, h, n, dh).
        """
        check_inputs(q, k, v, log_existence)
        check_constraints(self.name, self.constraints, q, k, v)
        if self._local_fn is None:
            return local_attention(q, k, v, log_existence, window=window, causal=causal)
        return self._local_fn(q, k, v, log_existence, window=window, causal=causal, **self._options)

    def extra_repr(self) -> str:
        """The backend name and its options."""
        opts = ", ".join(f"{k}={v}" for k, v in self._options.items())
        return f"backend={self.name}" + (f", {opts}" if opts else "")


class AttentionConfig(ComponentConfig):
    """Base config of attention backends.

    ``build()`` takes no context: a model builds its backend once, before its levels, and hands it
    to every level in :class:`~zonkey.core.contracts.shapes.LevelContext`. ``constraints`` declares what the
    backend runs on; the dispatch and the built module both check it.
    """

    constraints: ClassVar[BackendConstraints] = BackendConstraints()

    def module(self, fn: BackendFn, local_fn: BackendFn | None = None, **options: object) -> AttentionBackend:
        """The backend module of this config: ``fn`` (and its sliding-window form) under this class's constraints."""
        return AttentionBackend(self.registered_name, fn, self.constraints, local_fn, **options)
