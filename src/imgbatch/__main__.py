from imgbatch.cli import app

app(prog_name="imgbatch")
