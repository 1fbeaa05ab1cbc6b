Console.WriteLine("fiber-prof");
