"""Figures that show what the margin losses do, drawn from :mod:`marginface.losses` itself.

- :mod:`~marginface.plots.curves`: target-logit curves and two-class decision regions;
- :mod:`~marginface.plots.features`: train the registry's tiny network, through the trainer, with
  a 2-d/3-d embedding per loss;
- :mod:`~marginface.plots.metrics`: intra-class angle, inter-class angle and angular gap;
- :mod:`~marginface.plots.figures`: the matplotlib figures;
- :mod:`~marginface.plots.run`: one function per ``marginface plot`` command.
"""

from marginface.plots.metrics import AngularStats, angular_stats, class_centres

__all__ = ["AngularStats", "angular_stats", "class_centres"]
