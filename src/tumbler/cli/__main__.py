"""`python -m tumbler.cli ...` is `tumbler ...`."""
from tumbler.cli.main import app

app()
