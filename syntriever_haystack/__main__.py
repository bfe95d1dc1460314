from syntriever_haystack.cli import main

raise SystemExit(main())
