from kms_service.cli import main

# Guarded: serve --workers starts its workers with multiprocessing's spawn, which imports this module again.
if __name__ == "__main__":
    main()
