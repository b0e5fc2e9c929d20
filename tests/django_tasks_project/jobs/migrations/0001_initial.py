from django.db import migrations, models

ID = ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(name="Order", fields=[
            ID,
            ("note", models.CharField(max_length=100))]),
        migrations.CreateModel(name="Run", fields=[
            ID,
            ("label", models.CharField(max_length=100)),
            ("pid", models.IntegerField())]),
    ]
