"""`python -m gouache` is the `gouache` command."""

from gouache.cli import main

if __name__ == "__main__":
    main()
