from metagait_edge.cli import main

raise SystemExit(main())
