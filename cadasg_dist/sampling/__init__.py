"""Sampling a fitted model: the per-chunk draw (``draw``), conditions on any column
(``conditions``), the chunk loop (``loop``), in-memory draws (``run``) and streaming to a file
(``stream``). ``CADASG.sample``, ``sample_remaining`` and ``sample_to_file`` are thin wrappers.

Privacy: sampling reads only the model and its cache, so it is post-processing and spends no budget.
"""
