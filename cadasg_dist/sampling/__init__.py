"""Sampling a fitted model: the per-chunk draw (``draw``), conditions on any column
(``conditions``), the chunk loop (``loop``), in-memory draws (``run``) and streaming to a file
(``stream``). ``CADASG.sample``, ``sample_remaining`` and ``sample_to_file`` are thin wrappers.

Privacy: sampling reads only the model and its cache, so it is post-processing and spends no budget.
"""

# Rows drawn, decoded and (to a file) written at a time: the default ``chunk`` of every sampling
# call (here, so the CLI's parser reads it without importing the sampler). Memory follows it (a
# 50,000-row chunk of a 13-column model peaks about 100 MB below a 200,000-row one) and rows/s
# does not (measured: 361k against 346k rows/s writing Parquet). The rows for a seed depend on it
# once n exceeds it.
CHUNK_ROWS = 50_000
