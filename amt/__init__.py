"""Human studies (paper Figs. 5, 6, 11, 12): MTurk comparison HITs and a local lab mode.

``study`` (validated definitions), ``build`` (items, stimuli, HIT pages, ledger; no AWS call), ``ledger``
(the study's memory and its lock), ``money`` (integer cents), ``hosting`` (stimuli on S3), ``gateway``
(MTurk: budget, HIT type, HITs), ``collect`` and ``lab`` (answers into ``responses``), ``analysis``.
See docs/studies.md; the threat model is in docs/security-amt.md.
"""
