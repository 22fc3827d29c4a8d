"""pytest-benchmark measurements (`make bench`).

A package so that its conftest imports as `benchmarks.conftest`: as a bare `conftest` it would
replace tests/conftest.py in sys.modules, which test modules import (`from conftest import ...`).
"""
