"""What clients and operators send: input serializers, strict fields and FilterSets, shared by
the API and the console."""
