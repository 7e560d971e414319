from lumina_jax.cli import main

main()
