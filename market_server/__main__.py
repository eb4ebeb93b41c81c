import sys

from .serve import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "admin":
        from .admin import main as admin_main
        sys.exit(admin_main(args[1:]))
    if args and args[0] == "serve":
        args = args[1:]
    sys.exit(main(args))
