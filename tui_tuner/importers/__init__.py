"""Other tools' files turned into a tui-tuner configuration (`tui-tuner import`).

``native.py`` writes any configuration the loader reads (the predecessor's ``vllm_config.yaml``
included) back in the native format of docs/configuration.md; ``sweep.py`` reads `vllm bench
sweep`'s parameter files (``--serve-params``, ``--bench-params`` JSON) and its ``--serve-cmd`` and
``--bench-cmd`` strings (split with shlex, never a shell). What has no equivalent in tui-tuner
becomes a note, written as a comment atop the file and printed. Every file written is checked by
the loader first, so it always loads.

Pure but for reading the input files: imports `core` only.
"""
