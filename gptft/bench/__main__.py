from .orchestrate import main

if __name__ == "__main__":  # importing the package (e.g. a test scanning modules) must not run it
    raise SystemExit(main())
