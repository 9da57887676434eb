"""The only code in FlowStone that runs SQL: migrations, named queries and the stores."""
