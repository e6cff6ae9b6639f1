"""`python -m gateway` runs the `gateway` command."""

from gateway.cli import main

if __name__ == "__main__":
    main()
