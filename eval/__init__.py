"""Evaluation suite: scenario configs (``eval/*.yaml``) and their runner (``python -m eval.run_all``).

Each YAML file is one scenario: a simulated enterprise (``slowburn simulate``) with an
attack scenario of the simulator, no attack at all (false alerts per 1,000 host-days),
or a real labelled capture of ``../shared/datasets`` injected into the simulated
background (shifted in time, attacker/victim remapped onto simulated hosts of the
right roles). :mod:`eval.run_all` runs them through ``slowburn eval`` and writes
``eval/RESULTS.md``.
"""
