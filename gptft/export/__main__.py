from .command import main

if __name__ == "__main__":  # not when a test imports every module
    main()
