from vmsnapshot.cli import main

raise SystemExit(main())
