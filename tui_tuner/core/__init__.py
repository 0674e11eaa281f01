"""Pure domain: vLLM's flags and rules, measurements, errors. Imports nothing else of the
package, and nothing that starts processes, opens sockets or draws (see tests/test_import_rules)."""
