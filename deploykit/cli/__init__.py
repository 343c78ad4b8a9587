"""Layer cli: the typer commands only -- parse options, call the library, print with rich; one console module,
one way to fail. Library imports happen inside the commands, so ``deploykit --help`` stays light.

May import: anything below."""
