"""The k-NN vote that turns a query's nearest stored faces into one subject (or unknown).

The rule is evaluation's, :func:`marginface.eval.identify.vote_neighbours` (one implementation,
so what ``marginface eval identify`` measures is what the gallery and the service decide), here
under the gallery's name ``knn_vote(subjects, scores, threshold, k=None)``, applied to the
query's ``k`` nearest stored faces:

1. each neighbour votes for its subject with weight ``max(similarity, 0)``;
2. the subject with the largest summed weight wins; a tie goes to the subject with the more
   similar best neighbour;
3. the winner is accepted when its best similarity (a cosine, comparable with the calibrated
   threshold) reaches ``threshold``; otherwise the answer is *unknown*.
"""

from __future__ import annotations

from marginface.eval.identify import VoteResult
from marginface.eval.identify import vote_neighbours as knn_vote

__all__ = ["VoteResult", "knn_vote"]
