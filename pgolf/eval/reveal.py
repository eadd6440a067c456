"""What a causal eval-time method may see of the validation stream: the revealed prefix only.

:class:`RevealedView` is read-only access to the tokens already scored; reading any later
position raises :class:`LegalityError`, the error every legality check of evaluation
raises. The causal harness (:mod:`pgolf.eval.stream`) hands methods these views, and the
audit of the causal n-gram mixture (:mod:`pgolf.eval.mixture`) recomputes its reference
distribution through one.

    past = RevealedView(buffer, revealed=p)   # buffer[:p] visible, anything later refused
    past.tokens()                             # the revealed tokens (read-only)
"""

from __future__ import annotations

import numpy as np

from pgolf.errors import PgolfError


class LegalityError(PgolfError):
    """The harness rejected a method: it read the future or its outputs depend on it (exit 3)."""

    exit_code = 3
    label = "LegalityError"


class RevealedView:
    """Read-only access to the tokens before ``revealed``; anything later raises LegalityError."""

    def __init__(self, buffer: np.ndarray, revealed: int):
        self._past = buffer[:revealed]
        self._past.flags.writeable = False
        self.revealed = revealed

    def __len__(self) -> int:
        return self.revealed

    def __getitem__(self, key):
        if isinstance(key, slice):
            if key.stop is not None and key.stop > self.revealed:
                raise LegalityError(f"read of positions up to {key.stop - 1}; only {self.revealed} are revealed")
        elif int(key) >= self.revealed:
            raise LegalityError(f"read of position {int(key)}; only {self.revealed} are revealed")
        return self._past[key]

    def tokens(self) -> np.ndarray:
        """All revealed tokens (read-only)."""
        return self._past
