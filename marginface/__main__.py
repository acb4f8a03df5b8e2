"""``python -m marginface`` runs the CLI."""

from marginface.cli import main

if __name__ == "__main__":
    main()
