"""padless's benchmarks: each module ``bench_NAME`` (and ``profile_decoding``,
``compare_in_memory``) runs as ``python -m benchmarks.bench_NAME`` from the repository root
and writes its section of ``benchmarks/RESULTS.md`` (README.md says what each measures).

The shared pieces: :mod:`benchmarks.results` (a section's header: date, machine, load,
command), :mod:`benchmarks.machine` (CPU, ISA, bf16, matmul peak), :mod:`benchmarks.data`
(the prepared data the benchmarks train on), :mod:`benchmarks.tutorial` (the PyTorch
chatbot tutorial's model and training loop, for comparison), :mod:`benchmarks.models` (the
models compared); timing is :mod:`padless.runtime.timing`'s.
"""
