"""`python -m forkwsgi`: the same entry point as the `forkwsgi` console script."""

from forkwsgi.cli import main

if __name__ == "__main__":
    main()
