from syncwatch.cli import main

raise SystemExit(main())
