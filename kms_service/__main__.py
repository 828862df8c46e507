from kms_service.cli import main

main()
