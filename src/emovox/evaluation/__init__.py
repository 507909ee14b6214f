"""The pipeline's last stage: what a run's predictions measure, and how it is shown.

- ``metrics``: the one definition of every reported number (WA, UA, macro/weighted F1, ECE), tested
  equal to scikit-learn;
- ``predictions``: the predictions CSV, its one reader and writer, and read access to run directories;
- ``reporting``: tables, CSVs, plots and ``report.md`` in the papers' layout;
- ``stats``: bootstrap confidence intervals and paired comparisons of runs;
- ``voting``: hard, soft and weighted votes over saved predictions of finished runs; ``vote_report`` writes a
  vote as a run directory of its own.

Nothing here imports a model: it reads predictions, so it sits below everything that makes them.
"""
