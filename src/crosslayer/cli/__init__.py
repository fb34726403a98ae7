"""Command-line interface (typer). One small module per command group; no algorithm code here."""
