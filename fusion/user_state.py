"""The writer's user-side cache (fusion/hybrid.py): what recording feedback patches instead of rebuilding.

A user's published state (decayed positives, interest distribution, LightFM feature row and
representation) depends only on that user's own events and on parameters that feedback does not
change, so ``HybridModel.add_interactions`` recomputes the rows of the users it touched and splices
them into the published arrays: O(touched users' events) in Python, plus array copies in C,
instead of a Python pass over every stored event and every user (58-74 ms per feedback call at
~37k stored events and 377-614 ms at ~237k before this cache, 2-5 ms after: BENCHMARKS.md
"Feedback and liked-item deletes").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class UserRows:
    """The user feature rows (U, Fu) behind ``user_repr``, the published array they produced with the
    LightFM user parameters of ``trained_version``. Valid while the snapshot still holds that array."""

    features: sp.csr_matrix
    user_repr: np.ndarray
    trained_version: int

    def describes(self, user_repr: np.ndarray, trained_version: int) -> bool:
        return user_repr is self.user_repr and trained_version == self.trained_version

